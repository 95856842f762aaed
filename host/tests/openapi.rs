//! `/openapi.json` and `/docs` on the real binary: the document is valid OpenAPI 3.1 and
//! schemathesis, fuzzing a SmolLM2 server from it, finds no 5xx and no response that breaks the
//! documented schema (tests/clients/openapi_fuzz.py); Swagger UI renders the operations in
//! headless Chromium (Debian's package, which scripts/setup-system installs) with every host
//! but loopback unreachable, so nothing it needs comes from a CDN; `--no-docs` serves neither.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Server, agent, smollm2};

#[test]
fn the_document_is_valid_and_fuzzing_finds_no_server_error() {
    let model = smollm2();
    // A short context bounds what one fuzzed request may generate; the tiny image model makes
    // `/v1/images/generations` answer rather than 503 (no model), and its images are small.
    let image_model = common::repo_root().join("tests/fixtures/diffusion/tiny-sd");
    let server = Server::start_with_env(
        &[
            "--model",
            model.to_str().unwrap(),
            "--device",
            "flex",
            "--ctx-size",
            "128",
            "--image-model",
            image_model.to_str().unwrap(),
        ],
        &[("OPENEDAI_EMBEDDING_MODEL", "all-MiniLM-L6-v2")],
    );
    let script = common::repo_root().join("tests/clients/openapi_fuzz.py");
    let out = common::run_client(
        &common::python(),
        &[script.to_str().unwrap(), &server.base, "--max-examples", "6"],
        &server,
        &[],
    );
    eprintln!("{out}");
}

/// Debian's Chromium (`chromium`), or `HEARTH_TEST_CHROMIUM`.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("HEARTH_TEST_CHROMIUM") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from("/usr/bin/chromium");
    assert!(p.exists(), "{} is missing: run scripts/setup-system (scripts/test does)", p.display());
    p
}

/// Chromium, headless, that can reach loopback alone: names resolve to nothing and every other
/// connection goes to a closed proxy port.
fn offline_chromium(args: &[&str]) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--proxy-server=http://127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            // Lets Swagger UI's scripts fetch the document and render before the page is read.
            "--virtual-time-budget=15000",
            "--window-size=1280,2400",
        ])
        .args(args)
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn docs_render_the_operations_offline() {
    let server = Server::start(&["--device", "flex"]);
    let docs = server.url("/docs/");
    let dom = offline_chromium(&["--dump-dom", &docs]);
    for path in ["/v1/chat/completions", "/v1/completions", "/v1/internal/logits", "/v1/embeddings"] {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "the rendered page lists {path}:\n{}",
            &dom[..dom.len().min(3000)]
        );
    }
    // The picture, for a person to look at (the note links it).
    let shot = std::env::temp_dir().join("hearth-docs.png");
    let screenshot = format!("--screenshot={}", shot.display());
    offline_chromium(&[&screenshot, &docs]);
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000), "a screenshot at {}", shot.display());
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn no_docs_serves_neither() {
    let status =
        |server: &Server, path: &str| agent().get(&server.url(path)).call().expect("an answer").status().as_u16();
    let on = Server::start(&["--device", "flex"]);
    assert_eq!(status(&on, "/openapi.json"), 200);
    assert_eq!(status(&on, "/docs/"), 200);
    let off = Server::start(&["--device", "flex", "--no-docs"]);
    assert_eq!(status(&off, "/openapi.json"), 404);
    assert_eq!(status(&off, "/docs/"), 404);
}
