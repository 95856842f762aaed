//! `/metrics` on the real binary, on a server of its own (the counters then move only for this
//! test's requests): openai-python's chat, streamed chat and embeddings requests move the
//! counters by their `usage`, each generation lands once in the latency histograms, and vLLM's
//! gauge names are there (tests/clients/metrics_scrape.py, with prometheus_client's parser);
//! the route follows the API key unless `--metrics-public`.

mod common;

use common::{Server, agent, smollm2};

fn status_of(server: &Server, key: Option<&str>) -> u16 {
    let mut request = agent().get(&server.url("/metrics"));
    if let Some(key) = key {
        request = request.header("Authorization", &format!("Bearer {key}"));
    }
    request.call().expect("an answer").status().as_u16()
}

#[test]
fn counters_move_by_what_the_answers_report() {
    let model = smollm2();
    let server = Server::start_with_env(
        &["--model", model.to_str().unwrap(), "--device", "flex"],
        &[("OPENEDAI_EMBEDDING_MODEL", "all-MiniLM-L6-v2")],
    );
    common::run_python("metrics_scrape.py", &server);
}

#[test]
fn metrics_follow_the_api_key_unless_public() {
    let keyed = Server::start(&["--api-key", "sekrit", "--device", "flex"]);
    assert_eq!(status_of(&keyed, None), 401);
    assert_eq!(status_of(&keyed, Some("sekrit")), 200);
    let public = Server::start(&["--api-key", "sekrit", "--device", "flex", "--metrics-public"]);
    assert_eq!(status_of(&public, None), 200);
    assert_eq!(agent().get(&public.url("/v1/models")).call().unwrap().status().as_u16(), 401, "only /metrics");
}
